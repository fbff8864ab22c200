"""A node double that plays kubelet for the local control plane: no real kubelet, no container engine.

    images = ImageStore(tmp / "images")
    ref = images.build("registry.local/train", {"train.py": b"..."}, ["python3", "/app/train.py"], None)
    with NodeDouble(cluster, tmp / "kubelet", images, [NodeSpec("gpu-0", "TrustedLaunch")]) as nodes:
        ...  # pods bound to gpu-0 run, their status is reported like kubelet reports it

Nodes. Each `NodeSpec` becomes a Node registered with that node's own credentials
(`cluster.kubeconfig_for_node`: CN=system:node:<name>, so the Node authorizer and NodeRestriction apply
to everything the double does for it), with the AKS labels (`kubernetes.azure.com/security-type`
unless the node has no TPM, `kubernetes.azure.com/accelerator=nvidia` when it has GPUs,
`kubernetes.azure.com/agentpool`, `kubernetes.io/hostname`, `kubernetes.io/os`), Ready, capacity and
allocatable (cpu, memory, pods, ephemeral-storage, `nvidia.com/gpu`). A heartbeat renews the node's
Lease in `kube-node-lease` every few seconds and refreshes the Ready condition every minute, so the
node lifecycle controller keeps it Ready. `aicert.dev/assurance` is never set: the agent labels its node.

Pods. One watch per node (field selector `spec.nodeName=<node>`, the node's credentials), one thread
per pod. Volumes are laid out like kubelet lays them out under `kubelet_root`:

- emptyDir: `pods/<uid>/volumes/kubernetes.io~empty-dir/<volume>` (medium Memory: a real tmpfs mount,
  sized by sizeLimit);
- persistentVolumeClaim: PVC -> PV (`spec.local.path` or `spec.hostPath.path`), bind-mounted with
  `mount --bind` at `pods/<uid>/volumes/kubernetes.io~local-volume/<pv name>` (remounted read-only
  when the pod's volume says readOnly); writes to the PV directory show through it at once;
- hostPath: the host path itself, as kubelet does;
- configMap, secret, downwardAPI and projected (serviceAccountToken via the TokenRequest API,
  configMap, secret, downwardAPI) volumes: files written under `kubernetes.io~<plugin>/<volume>`
  once at start (never refreshed).

Init containers run one after the other, then the containers all at once, each a local process in a
bubblewrap sandbox: a fresh root of read-only binds of the host's /usr /bin /lib /lib64 /sbin /etc
/root/.pyenv and /work (the repository and its venv), the venv of `python_executable` also at
/opt/venv, the image's files read-only at /app, the container's volumeMounts at their mountPath
(read-only when the mount or the claim says so), `--proc /proc --dev /dev --tmpfs /tmp --tmpfs
/dev/shm`, own PID, IPC and UTS namespaces (hostname = pod name), `--die-with-parent`, the default
container capabilities (all of them when privileged), the root made read-only for
readOnlyRootFilesystem. The network is the host's (hostIP = podIP = 127.0.0.1), and
KUBERNETES_SERVICE_HOST/PORT point at the API server, so in-cluster clients work. The command is
resolved like Kubernetes resolves it (command replaces the image Entrypoint, args replace its Cmd,
`$(VAR)` expanded from the container's env), the env is the image's plus the container's (env,
envFrom, valueFrom fieldRef/configMapKeyRef/secretKeyRef), the working dir the container's or the
image's. stdout and stderr go to `<kubelet_root>/pod-logs/<namespace>_<pod>_<uid>/<container>.log`
(`NodeDouble.logs(uid)` reads them).

Images come from an `ImageStore` by digest. A digest that is not there leaves the container waiting
with reason ErrImagePull ("... not found in the local image store"), then ImagePullBackOff, retried
with back-off; the pod stays Pending and nothing runs. One reference is special: `agent_image` (the
gate/seal image of the pod contract, DEV_AGENT_IMAGE by default, pinned by a digest that names no
real image) runs the container's command with the host's `python_executable` (a leading
`python`/`python3` is replaced by it; entrypoint `python -m aicert_agent`), working dir /, imageID
`<repository>@<its digest>` (a reference by tag gets `<repository>@sha256:<sha256 of the reference>`).

Status is reported like kubelet reports it, through the pod's status subresource with the node's
credentials: phase, conditions (PodScheduled, PodReadyToStartContainers, Initialized,
ContainersReady, Ready), initContainerStatuses/containerStatuses (waiting PodInitializing /
ContainerCreating / ErrImagePull / ImagePullBackOff, running with startedAt, terminated with exitCode,
reason Completed/Error, startedAt, finishedAt), ready, started, restartCount, image, imageID,
containerID (`bwrap://<64 hex>`), hostIP/podIP, startTime. Restart policy is always treated as Never:
a failed init container fails the pod and nothing after it starts. When the pod reaches a terminal
phase its volumes are torn down (unmounted; emptyDirs removed) as kubelet does.

Deletion: a pod with a deletionTimestamp has its processes sent SIGTERM, then SIGKILL after
min(grace period, `max_grace_seconds`), its terminal status reported, its volumes unmounted, and is then
deleted with gracePeriodSeconds=0 (and the uid as precondition), which removes the object; its pod
directory goes too (logs stay). A pod whose object disappears is stopped and cleaned the same way.
`stop()` (or leaving the `with` block) ends every pod's processes and unmounts its volumes without
touching the API, like a node that goes away; a later double for the same node marks pods it finds
already started as Failed (ContainerStatusUnknown), since it cannot re-attach to them.

A failure while handling one pod is logged (logger "aicert_localcluster.nodes"), recorded in
`NodeDouble.errors`, and fails only that pod.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import http.client
import importlib.util
import json
import logging
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any, Literal, Protocol, Self

from .images import ImageNotFound, ImageStore, ImageStoreError, parse_reference

log = logging.getLogger("aicert_localcluster.nodes")

SecurityType = Literal["TrustedLaunch", "ConfidentialVM"]

LOOPBACK = "127.0.0.1"
LABEL_SECURITY_TYPE = "kubernetes.azure.com/security-type"
LABEL_ACCELERATOR = "kubernetes.azure.com/accelerator"
LABEL_AGENTPOOL = "kubernetes.azure.com/agentpool"
LABEL_MODE = "kubernetes.azure.com/mode"
LABEL_ASSURANCE = "aicert.dev/assurance"  # the agent's, never ours
GPU_RESOURCE = "nvidia.com/gpu"
NODE_LEASE_NAMESPACE = "kube-node-lease"
LEASE_DURATION_SECONDS = 40
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_HOST_BINDS: tuple[str, ...] = (
    "/usr",
    "/bin",
    "/lib",
    "/lib64",
    "/sbin",
    "/etc",
    "/root/.pyenv",
    "/work",
)
VENV_MOUNT = "/opt/venv"
APP_MOUNT = "/app"
# containerd's default capability set (what a non-privileged container gets).
DEFAULT_CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)
MERGE_PATCH = "application/merge-patch+json"
POLL_SECONDS = 0.1
PULL_BACKOFF_MAX_SECONDS = 10.0


def _kubernetes_version() -> str:
    try:
        from .binaries import kubernetes_version

        return kubernetes_version()
    except Exception:
        return "v0.0.0"


def _arch() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _now_micro() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --- a small Kubernetes REST client (one TLS connection per request: thread-safe) ---------------------


class ApiError(RuntimeError):
    """The API server answered with an error status."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"HTTP {status} {reason}: {message}")
        self.status, self.reason, self.message = status, reason, message


def _load_kubeconfig(path: Path) -> dict[str, Any]:
    text = path.read_text()
    try:
        loaded: dict[str, Any] = json.loads(text)
    except json.JSONDecodeError:
        import importlib

        yaml: Any = importlib.import_module("yaml")  # a YAML kubeconfig: PyYAML comes with `kubernetes`
        loaded = yaml.safe_load(text)
    return loaded


def _named(items: list[dict[str, Any]], name: str, what: str) -> dict[str, Any]:
    for item in items:
        if item.get("name") == name:
            found: dict[str, Any] = item[what]
            return found
    raise ValueError(f"kubeconfig has no {what} named {name!r}")


class _WatchStream:
    """The lines of one watch response; `close()` from another thread ends the iteration."""

    def __init__(self, conn: http.client.HTTPSConnection, response: http.client.HTTPResponse) -> None:
        self._conn, self._response = conn, response

    def __iter__(self) -> Iterator[dict[str, Any]]:
        try:
            while True:
                line = self._response.readline()
                if not line:
                    return
                if line.strip():
                    event: dict[str, Any] = json.loads(line)
                    yield event
        except (OSError, ValueError, http.client.HTTPException):
            return
        finally:
            self.close()

    def close(self) -> None:
        sock = self._conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(Exception):
            self._conn.close()


class KubeClient:
    """JSON over HTTPS with the credentials of one kubeconfig (client certificate or token)."""

    def __init__(self, kubeconfig: Path, credentials_dir: Path) -> None:
        config = _load_kubeconfig(kubeconfig)
        context = _named(config["contexts"], config["current-context"], "context")
        cluster = _named(config["clusters"], context["cluster"], "cluster")
        user = _named(config["users"], context["user"], "user")
        self.server = str(cluster["server"]).rstrip("/")
        parsed = urllib.parse.urlsplit(self.server)
        self.host = parsed.hostname or LOOPBACK
        self.port = parsed.port or 443
        if "certificate-authority-data" in cluster:
            ctx = ssl.create_default_context(
                cadata=base64.b64decode(cluster["certificate-authority-data"]).decode()
            )
        else:
            ctx = ssl.create_default_context(cafile=cluster.get("certificate-authority"))
        self._headers: dict[str, str] = {"Accept": "application/json"}
        if "token" in user:
            self._headers["Authorization"] = f"Bearer {user['token']}"
        if "client-certificate-data" in user or "client-certificate" in user:
            credentials_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            cert, key = credentials_dir / "client.crt", credentials_dir / "client.key"
            for target, data_key, file_key in (
                (cert, "client-certificate-data", "client-certificate"),
                (key, "client-key-data", "client-key"),
            ):
                data = (
                    base64.b64decode(user[data_key])
                    if data_key in user
                    else Path(user[file_key]).read_bytes()
                )
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
            ctx.load_cert_chain(str(cert), str(key))
        self._ssl = ctx

    def _connect(self, timeout: float) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(self.host, self.port, context=self._ssl, timeout=timeout)

    @staticmethod
    def _target(path: str, query: Mapping[str, str] | None) -> str:
        return path + ("?" + urllib.parse.urlencode(query) if query else "")

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        headers = dict(self._headers)
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        conn = self._connect(timeout)
        try:
            conn.request(method, self._target(path, query), body=payload, headers=headers)
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        if response.status >= 400:
            raise self._error(response.status, data)
        if not data:
            return {}
        parsed: dict[str, Any] = json.loads(data)
        return parsed

    def watch(self, path: str, query: Mapping[str, str], timeout: float) -> _WatchStream:
        conn = self._connect(timeout)
        try:
            conn.request("GET", self._target(path, {**query, "watch": "true"}), headers=self._headers)
            response = conn.getresponse()
            if response.status >= 400:
                raise self._error(response.status, response.read())
        except BaseException:
            conn.close()
            raise
        return _WatchStream(conn, response)

    @staticmethod
    def _error(status: int, data: bytes) -> ApiError:
        try:
            body = json.loads(data)
            return ApiError(status, str(body.get("reason", "")), str(body.get("message", data[:500])))
        except ValueError:
            return ApiError(status, "", data[:500].decode(errors="replace"))


# --- nodes -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeSpec:
    """One node: an AKS GPU node of the given security type (None: a node without a TPM)."""

    name: str
    security_type: SecurityType | None
    gpus: int = 1
    agentpool: str = "gpu"
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: Sequence[Mapping[str, str]] = ()  # set at registration only (NodeRestriction)
    cpu: str = "8"
    memory: str = "64Gi"
    max_pods: int = 110

    def node_labels(self) -> dict[str, str]:
        labels = {
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": _arch(),
            LABEL_AGENTPOOL: self.agentpool,
            "agentpool": self.agentpool,
            LABEL_MODE: "user",
        }
        if self.security_type is not None:
            labels[LABEL_SECURITY_TYPE] = self.security_type
        if self.gpus > 0:
            labels[LABEL_ACCELERATOR] = "nvidia"
        labels.update(self.labels)
        if LABEL_ASSURANCE in labels:
            raise ValueError(f"node {self.name}: {LABEL_ASSURANCE} is the agent's to set, not the node's")
        return labels

    def resources(self) -> dict[str, str]:
        resources = {
            "cpu": self.cpu,
            "memory": self.memory,
            "pods": str(self.max_pods),
            "ephemeral-storage": "100Gi",
            "hugepages-1Gi": "0",
            "hugepages-2Mi": "0",
        }
        if self.gpus > 0:
            resources[GPU_RESOURCE] = str(self.gpus)
        return resources


class ClusterAccess(Protocol):
    """What the double needs of a LocalCluster."""

    def kubeconfig_for_node(self, node_name: str) -> Path: ...


# --- mounts, processes ----------------------------------------------------------------------------


def _run_tool(*argv: str) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    if proc.returncode != 0:
        raise OSError(f"{' '.join(argv)} failed (exit {proc.returncode}): {proc.stderr.strip()}")


def mount_points() -> list[Path]:
    """Every mount point of this process's mount namespace."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split(" ")
        if len(fields) > 4:
            points.append(Path(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])))
    return points


def mounts_under(path: Path) -> list[Path]:
    path = Path(os.path.abspath(path))
    return [p for p in mount_points() if p == path or path in p.parents]


def bind_mount(source: Path, target: Path, *, read_only: bool) -> None:
    target.mkdir(parents=True, exist_ok=True)
    _run_tool("mount", "--bind", str(source), str(target))
    if read_only:
        try:
            _run_tool("mount", "-o", "remount,bind,ro", str(target))
        except OSError:
            unmount(target)
            raise


def tmpfs_mount(target: Path, size_bytes: int | None) -> None:
    target.mkdir(parents=True, exist_ok=True)
    options = "mode=0777" + (f",size={size_bytes}" if size_bytes else "")
    _run_tool("mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target))


def unmount(target: Path) -> None:
    try:
        _run_tool("umount", str(target))
    except OSError:
        _run_tool("umount", "-l", str(target))


def _safe_rmtree(path: Path) -> None:
    """Remove a directory tree, never through a mount point (unmount those first, or leave the tree)."""
    if not path.exists():
        return
    for point in sorted(mounts_under(path), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            unmount(point)
    if mounts_under(path):
        log.warning("not removing %s: mounts remain under it", path)
        return
    shutil.rmtree(path, ignore_errors=True)


_QUANTITY = re.compile(r"^([0-9.]+(?:[eE][0-9]+)?)([a-zA-Z]*)$")
_SUFFIXES = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}


def quantity_bytes(value: object) -> int | None:
    """A Kubernetes quantity ("1Mi", "500M", 1024) in bytes; None when it is not one."""
    match = _QUANTITY.match(str(value).strip())
    if match is None or match.group(2) not in _SUFFIXES:
        return None
    return int(float(match.group(1)) * _SUFFIXES[match.group(2)])


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, frontier = [], [pid]
    while frontier:
        for child in children.get(frontier.pop(), []):
            found.append(child)
            frontier.append(child)
    return found


def terminate(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM the sandboxed processes (bwrap's own init ignores it), SIGKILL the lot after `grace`."""
    if proc.poll() is not None:
        return
    for pid in _descendants(proc.pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    try:
        proc.wait(timeout=max(grace, 0.0))
        return
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # start_new_session: the group is the sandbox's
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    proc.wait()


def exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion: defined names are replaced, `$$` is a literal `$`."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "$" and i + 1 < len(text):
            if text[i + 1] == "$":
                out.append("$")
                i += 2
                continue
            if text[i + 1] == "(":
                end = text.find(")", i + 2)
                if end != -1:
                    name = text[i + 2 : end]
                    out.append(env[name] if name in env else text[i : end + 1])
                    i = end + 1
                    continue
        out.append(text[i])
        i += 1
    return "".join(out)


def container_argv(container: Mapping[str, Any], entrypoint: Sequence[str], cmd: Sequence[str]) -> list[str]:
    """command replaces the image's Entrypoint (and drops its Cmd); args replace its Cmd."""
    command = list(container.get("command") or [])
    args = list(container.get("args") or [])
    if command:
        return command + args
    return list(entrypoint) + (args if args else list(cmd))


def _under(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def sandbox_argv(
    *,
    bwrap: str,
    host_binds: Sequence[tuple[str, str]],
    app_dir: Path | None,
    mounts: Sequence[tuple[Path, str, bool]],
    workdir: str,
    hostname: str,
    capabilities: Sequence[str] | None,
    read_only_root: bool,
    argv: Sequence[str],
) -> list[str]:
    """The bwrap command line for one container (host_binds: read-only (host, sandbox) pairs; mounts:
    (host path, mountPath, read-only); capabilities None keeps them all, i.e. privileged)."""
    # The private /tmp (and /dev, /proc) first: bwrap mounts in order, so host paths that live
    # under /tmp (a checkout in /tmp, its venv) must be bound after it, on top of it.
    args = [bwrap, "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/dev/shm", "--tmpfs", "/tmp"]
    for source, target in host_binds:
        if os.path.islink(source) and source == target:
            args += ["--symlink", os.readlink(source), target]
        elif os.path.exists(source):
            args += ["--ro-bind", source, target]
    if app_dir is not None:
        args += ["--ro-bind", str(app_dir), APP_MOUNT]
    destinations = (
        [t for _, t in host_binds] + [APP_MOUNT, "/tmp", "/proc", "/dev"] + [m for _, m, _ in mounts]
    )
    if workdir != "/" and not any(_under(workdir, d) for d in destinations):
        args += ["--dir", workdir]
    for source_path, mount_path, read_only in mounts:
        args += ["--ro-bind" if read_only else "--bind", str(source_path), mount_path]
    args += ["--chdir", workdir, "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--hostname", hostname]
    args += ["--die-with-parent"]
    if capabilities is not None:
        args += ["--cap-drop", "ALL"]
        for capability in capabilities:
            args += ["--cap-add", capability]
    if read_only_root:
        args += ["--remount-ro", "/"]
    return [*args, "--", *argv]


def capabilities_for(security_context: Mapping[str, Any]) -> list[str] | None:
    if security_context.get("privileged"):
        return None
    requested = security_context.get("capabilities") or {}
    drop = {_cap_name(c) for c in requested.get("drop") or []}
    caps = [] if "CAP_ALL" in drop else [c for c in DEFAULT_CAPABILITIES if c not in drop]
    for add in requested.get("add") or []:
        name = _cap_name(add)
        if name != "CAP_ALL" and name not in caps:
            caps.append(name)
    return caps


def _cap_name(capability: str) -> str:
    upper = str(capability).upper()
    return upper if upper.startswith("CAP_") else f"CAP_{upper}"


# --- images as the runtime sees them ----------------------------------------------------------------


@dataclass(frozen=True)
class _RunImage:
    app_dir: Path | None
    entrypoint: list[str]
    cmd: list[str]
    env: dict[str, str]
    workdir: str
    image_id: str
    host_python: bool = False


# The gate/seal image the test stack and the demo use: pinned by digest as the pod contract requires.
DEV_AGENT_IMAGE = (
    "registry.local/aicert/agent@sha256:7903601cd11d4adc4c69c90f44ef685939d20989d097bab831f4bd8f0894b628"
)


def agent_image_id(reference: str) -> str:
    """The imageID reported for the agent image: its own digest if it has one, else
    `<repository>@sha256:<sha256 of the reference string>`."""
    try:
        parsed = parse_reference(reference)
    except ImageNotFound:
        return f"aicert-agent@sha256:{hashlib.sha256(reference.encode()).hexdigest()}"
    if parsed.digest:
        return f"{parsed.repository}@{parsed.digest}"
    return f"{parsed.repository}@sha256:{hashlib.sha256(reference.encode()).hexdigest()}"


# --- one pod --------------------------------------------------------------------------------------


class _Aborted(Exception):
    """The pod was deleted, or the node stops: stop what you are doing."""


class _Retry(Exception):
    """Not possible yet (volume not bound, image missing, ...); reported as a waiting reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


@dataclass
class _Condition:
    status: str
    reason: str = ""
    message: str = ""
    since: str = field(default_factory=_now)


class _PodWorker:
    def __init__(self, double: NodeDouble, node: _Node, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        self.double, self.node = double, node
        self.uid, self.namespace, self.name = str(meta["uid"]), str(meta["namespace"]), str(meta["name"])
        self._pod = pod
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self.deleting = threading.Event()
        self.gone = threading.Event()
        self.done = threading.Event()
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._statuses: dict[str, dict[str, Any]] = {}
        self._conditions: dict[str, _Condition] = {}
        self._phase = "Pending"
        self._start_time = _now()
        self._mounts: list[Path] = []
        self._volumes: dict[str, tuple[Path, bool]] = {}  # name -> (host path, read-only)
        self._torn_down = False
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

    # paths ----------------------------------------------------------------------------------------

    @property
    def pod_dir(self) -> Path:
        return self.double.kubelet_root / "pods" / self.uid

    @property
    def log_dir(self) -> Path:
        return self.double.kubelet_root / "pod-logs" / f"{self.namespace}_{self.name}_{self.uid}"

    def _plugin_dir(self, plugin: str, name: str) -> Path:
        return self.pod_dir / "volumes" / f"kubernetes.io~{plugin}" / name

    # control --------------------------------------------------------------------------------------

    def _stopping(self) -> bool:
        return self.double.stopping or self.gone.is_set() or self.deleting.is_set()

    def _check(self) -> None:
        if self._stopping():
            raise _Aborted()

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
                self._guarded(lambda: _safe_rmtree(self.pod_dir))
        finally:
            self.done.set()
            self.double._forget(self)

    def _guarded(self, action: Callable[[], None]) -> None:
        try:
            action()
        except Exception as exc:
            self.double._record_error(f"pod {self.namespace}/{self.name}: {exc!r}")

    def _run(self) -> None:
        try:
            self._lifecycle()
        except _Aborted:
            pass
        except Exception as exc:
            self.double._record_error(f"pod {self.namespace}/{self.name}: {exc!r}")
            self._kill_all(0.5)
            if not self._stopping() and self._phase not in ("Succeeded", "Failed"):
                self._fail_unstarted(f"node double error: {exc}")

    def _stop_processes(self) -> None:
        """After the pod ended or was aborted: end what still runs, report the terminal status."""
        killed = self._kill_all(self._grace())
        if self.double.stopping or self.gone.is_set() or not self._statuses:
            return
        phase = self._phase
        self._settle_phase()
        if killed or phase != self._phase:
            self._report()

    def _lifecycle(self) -> None:
        status = self.pod.get("status") or {}
        if status.get("phase") in ("Succeeded", "Failed"):
            return  # finished before we saw it (another double): nothing to run
        self._check()
        previous = [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]
        if any(set(c.get("state") or {}) & {"running", "terminated"} for c in previous):
            self._mark_lost(status)  # started by an earlier double for this node: cannot re-attach
            return
        self._start_time = str(status.get("startTime") or self._start_time)
        spec = self.spec
        inits = list(spec.get("initContainers") or [])
        regular = list(spec.get("containers") or [])
        for c in inits:
            self._statuses[c["name"]] = self._waiting_status(c, "PodInitializing")
        for c in regular:
            self._statuses[c["name"]] = self._waiting_status(
                c, "PodInitializing" if inits else "ContainerCreating"
            )
        self._conditions["PodReadyToStartContainers"] = _Condition("False")
        self._report()

        self._retrying(self._setup_volumes, [c["name"] for c in [*inits, *regular]])
        self._conditions["PodReadyToStartContainers"] = _Condition("True")
        self._report()

        for c in inits:
            code = self._run_to_completion(c)
            if code != 0:
                self._phase = "Failed"
                self._report()
                return
        for c in regular:
            self._set_waiting(c, "ContainerCreating", "")
        self._report()
        for c in regular:
            self._start(c)
        while any(p.poll() is None for p in self._procs.values()):
            self._sleep(POLL_SECONDS)
            self._reap()
        self._reap()
        self._settle_phase()
        self._report()

    def _retrying(self, action: Callable[[], None], waiting_for: list[str]) -> None:
        """Run `action` until it stops raising _Retry, showing the reason on the given containers."""
        delay = 1.0
        while True:
            self._check()
            try:
                action()
                return
            except _Retry as retry:
                for name in waiting_for:
                    state = self._statuses[name]["state"]
                    if "waiting" in state:
                        state["waiting"] = {"reason": state["waiting"]["reason"], "message": retry.message}
                self._report()
                self._sleep(delay)
                delay = min(delay * 2, 5.0)

    # containers -------------------------------------------------------------------------------------

    def _waiting_status(self, container: Mapping[str, Any], reason: str) -> dict[str, Any]:
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

    def _set_waiting(self, container: Mapping[str, Any], reason: str, message: str) -> None:
        waiting: dict[str, str] = {"reason": reason}
        if message:
            waiting["message"] = message
        self._statuses[container["name"]]["state"] = {"waiting": waiting}

    def _pull(self, container: Mapping[str, Any]) -> _RunImage:
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
                self._set_waiting(container, "ErrImagePull", message)
                self._report()
                self._event(container, "Warning", "Failed", f'Failed to pull image "{ref}": {message}')
                self._sleep(2.0)
                self._set_waiting(
                    container, "ImagePullBackOff", f'Back-off pulling image "{ref}": ErrImagePull: {message}'
                )
                self._report()
                self._event(container, "Normal", "BackOff", f'Back-off pulling image "{ref}"')
                self._sleep(backoff)
                backoff = min(backoff * 2, PULL_BACKOFF_MAX_SECONDS)

    def _prepare(self, container: Mapping[str, Any]) -> tuple[_RunImage, list[str], dict[str, str]]:
        delay = 1.0
        while True:
            image = self._pull(container)
            try:
                env = self._container_env(container, image)
                given = {
                    "command": [expand(str(a), env) for a in container.get("command") or []],
                    "args": [expand(str(a), env) for a in container.get("args") or []],
                }
                argv = container_argv(given, image.entrypoint, image.cmd)
                if image.host_python and argv and argv[0] in ("python", "python3"):
                    argv[0] = self.double.python_executable
                if not argv:
                    raise _Retry(
                        "CreateContainerError",
                        "no command specified (neither the container nor the image has one)",
                    )
                return image, argv, env
            except _Retry as retry:
                self._set_waiting(container, retry.reason, retry.message)
                self._report()
                self._sleep(delay)
                delay = min(delay * 2, 5.0)

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
        workdir = str(container.get("workingDir") or image.workdir or "/")
        host_binds = list(self.double.host_binds)
        command = sandbox_argv(
            bwrap=self.double.bwrap,
            host_binds=host_binds,
            app_dir=image.app_dir,
            mounts=mounts,
            workdir=workdir,
            hostname=self.name[:63],
            capabilities=capabilities_for(security),
            read_only_root=bool(security.get("readOnlyRootFilesystem")),
            argv=argv,
        )
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{name}.log", "ab") as output:
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                close_fds=True,
            )
        self._procs[name] = proc
        status = self._statuses[name]
        status.update(
            imageID=image.image_id,
            containerID=f"bwrap://{secrets.token_hex(32)}",
            started=True,
            ready=name not in self._init_names(),
            state={"running": {"startedAt": _now()}},
        )
        if name not in self._init_names():
            self._phase = "Running"  # initialized, and a container runs
        log.info("pod %s/%s: started %s (pid %d): %s", self.namespace, self.name, name, proc.pid, argv)
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
        now = _now()
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
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self.node.kube.request("POST", f"/api/v1/namespaces/{self.namespace}/events", body=event)
        except (ApiError, OSError) as exc:
            log.debug("pod %s/%s: event %s not recorded: %s", self.namespace, self.name, reason, exc)

    def _init_names(self) -> set[str]:
        return {c["name"] for c in self.spec.get("initContainers") or []}

    def _run_to_completion(self, container: Mapping[str, Any]) -> int:
        self._start(container)
        proc = self._procs[container["name"]]
        while proc.poll() is None:
            self._sleep(POLL_SECONDS)
        self._reap()
        return exit_code(proc.returncode)

    def _reap(self) -> None:
        """Record the exit of every process that ended; report when something changed."""
        changed = False
        for name, proc in self._procs.items():
            state = self._statuses[name]["state"]
            if "running" in state and proc.poll() is not None:
                code = exit_code(proc.returncode)
                self._statuses[name].update(
                    ready=name in self._init_names() and code == 0,
                    started=False,
                    state={
                        "terminated": {
                            "exitCode": code,
                            "reason": "Completed" if code == 0 else "Error",
                            "startedAt": state["running"]["startedAt"],
                            "finishedAt": _now(),
                            "containerID": self._statuses[name]["containerID"],
                        }
                    },
                )
                log.info("pod %s/%s: %s exited %d", self.namespace, self.name, name, code)
                changed = True
        if changed:
            self._report()

    def _kill_all(self, grace: float) -> bool:
        running = [p for p in self._procs.values() if p.poll() is None]
        if not running:
            return False
        if not self.double.stopping:
            for c in self._containers():
                if c["name"] in self._procs and self._procs[c["name"]].poll() is None:
                    self._event(c, "Normal", "Killing", f"Stopping container {c['name']}")
        threads = [threading.Thread(target=terminate, args=(p, grace)) for p in running]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for name, proc in self._procs.items():
            state = self._statuses[name]["state"]
            if "running" in state:
                code = exit_code(proc.returncode)
                self._statuses[name].update(
                    ready=False,
                    started=False,
                    state={
                        "terminated": {
                            "exitCode": code,
                            "reason": "Error" if code else "Completed",
                            "startedAt": state["running"]["startedAt"],
                            "finishedAt": _now(),
                            "containerID": self._statuses[name]["containerID"],
                        }
                    },
                )
        return True

    def _settle_phase(self) -> None:
        """Kubelet's phase for restartPolicy Never, once nothing runs any more."""
        if self._phase in ("Succeeded", "Failed"):
            return
        inits = [self._statuses[c["name"]] for c in self.spec.get("initContainers") or []]
        regular = [self._statuses[c["name"]] for c in self.spec.get("containers") or []]
        if any("running" in s["state"] for s in inits + regular):
            return
        if any("terminated" in s["state"] and s["state"]["terminated"]["exitCode"] != 0 for s in inits):
            self._phase = "Failed"
            return
        if all("terminated" in s["state"] for s in inits) and all(
            "terminated" in s["state"] for s in regular
        ):
            ok = all(s["state"]["terminated"]["exitCode"] == 0 for s in regular)
            self._phase = "Succeeded" if ok else "Failed"
            return
        if self.deleting.is_set() or self.gone.is_set():
            # deleted before it could finish: what never ran counts as failed, as kubelet reports it
            for s in inits + regular:
                if "waiting" in s["state"]:
                    s["state"] = {
                        "terminated": {
                            "exitCode": 137,
                            "reason": "ContainerStatusUnknown",
                            "message": "The container could not be located when the pod was terminated",
                        }
                    }
            self._phase = "Failed"

    def _fail_unstarted(self, message: str) -> None:
        for status in self._statuses.values():
            if "waiting" in status["state"]:
                status["state"] = {
                    "terminated": {"exitCode": 128, "reason": "StartError", "message": message}
                }
        self._phase = "Failed"
        self._report()

    def _mark_lost(self, status: Mapping[str, Any]) -> None:
        """The pod was started by an earlier double for this node: its processes are gone."""
        spec = self.spec
        previous = {
            s["name"]: dict(s)
            for s in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]
        }
        for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
            s = previous.get(c["name"]) or self._waiting_status(c, "PodInitializing")
            if "terminated" not in (s.get("state") or {}):
                s.update(
                    ready=False,
                    started=False,
                    state={
                        "terminated": {
                            "exitCode": 137,
                            "reason": "ContainerStatusUnknown",
                            "message": "The container could not be located when the pod was terminated",
                        }
                    },
                )
            self._statuses[c["name"]] = s
        self._start_time = str(status.get("startTime") or self._start_time)
        self._conditions["PodReadyToStartContainers"] = _Condition("False")
        self._phase = "Failed"
        self._report()

    # env ------------------------------------------------------------------------------------------

    def _container_env(self, container: Mapping[str, Any], image: _RunImage) -> dict[str, str]:
        env: dict[str, str] = {"PATH": DEFAULT_PATH}
        env.update(image.env)
        env.setdefault("HOME", "/root")
        env["HOSTNAME"] = self.name[:63]
        env["KUBERNETES_SERVICE_HOST"] = self.node.kube.host
        env["KUBERNETES_SERVICE_PORT"] = str(self.node.kube.port)
        env["KUBERNETES_SERVICE_PORT_HTTPS"] = str(self.node.kube.port)
        for source in container.get("envFrom") or []:
            prefix = str(source.get("prefix") or "")
            if "configMapRef" in source:
                ref = source["configMapRef"]
                data = self._config_data("configmaps", ref["name"], optional=bool(ref.get("optional")))
            elif "secretRef" in source:
                ref = source["secretRef"]
                data = self._config_data("secrets", ref["name"], optional=bool(ref.get("optional")))
            else:
                continue
            env.update({prefix + k: v.decode(errors="replace") for k, v in data.items()})
        for item in container.get("env") or []:
            name = str(item["name"])
            if "valueFrom" in item:
                value = self._value_from(item["valueFrom"], name)
                if value is None:
                    continue
                env[name] = value
            else:
                env[name] = expand(str(item.get("value", "")), env)
        return env

    def _value_from(self, source: Mapping[str, Any], name: str) -> str | None:
        if "fieldRef" in source:
            return self._field(str(source["fieldRef"]["fieldPath"]))
        for kind, key_ref in (("configmaps", "configMapKeyRef"), ("secrets", "secretKeyRef")):
            if key_ref in source:
                ref = source[key_ref]
                optional = bool(ref.get("optional"))
                data = self._config_data(kind, ref["name"], optional=optional)
                if ref["key"] not in data:
                    if optional:
                        return None
                    raise _Retry(
                        "CreateContainerConfigError",
                        f"couldn't find key {ref['key']} in {kind} {ref['name']}",
                    )
                return data[ref["key"]].decode(errors="replace")
        if "resourceFieldRef" in source:
            return ""
        raise _Retry("CreateContainerConfigError", f"env {name}: unsupported valueFrom {sorted(source)}")

    def _field(self, path: str) -> str:
        pod = self.pod
        meta, spec = pod["metadata"], pod.get("spec") or {}
        simple = {
            "metadata.name": meta.get("name"),
            "metadata.namespace": meta.get("namespace"),
            "metadata.uid": meta.get("uid"),
            "spec.nodeName": spec.get("nodeName"),
            "spec.serviceAccountName": spec.get("serviceAccountName"),
            "status.podIP": LOOPBACK,
            "status.podIPs": LOOPBACK,
            "status.hostIP": LOOPBACK,
            "status.hostIPs": LOOPBACK,
        }
        if path in simple:
            return str(simple[path] or "")
        match = re.fullmatch(r"metadata\.(labels|annotations)(?:\['(.+)'\])?", path)
        if match:
            values: dict[str, str] = meta.get(match.group(1)) or {}
            if match.group(2) is not None:
                return str(values.get(match.group(2), ""))
            return "\n".join(f'{k}="{v}"' for k, v in sorted(values.items()))
        raise _Retry("CreateContainerConfigError", f"unsupported fieldRef {path}")

    def _config_data(self, kind: str, name: str, *, optional: bool) -> dict[str, bytes]:
        try:
            obj = self.node.kube.request("GET", f"/api/v1/namespaces/{self.namespace}/{kind}/{name}")
        except ApiError as exc:
            if exc.status == 404 and optional:
                return {}
            raise _Retry(
                "CreateContainerConfigError", f"{kind} {self.namespace}/{name}: {exc.message}"
            ) from exc
        if kind == "secrets":
            return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        data = {k: str(v).encode() for k, v in (obj.get("data") or {}).items()}
        data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
        return data

    # volumes --------------------------------------------------------------------------------------

    def _setup_volumes(self) -> None:
        for volume in self.spec.get("volumes") or []:
            name = str(volume["name"])
            if name in self._volumes:
                continue
            if "emptyDir" in volume:
                self._volumes[name] = (self._empty_dir(name, volume["emptyDir"] or {}), False)
            elif "persistentVolumeClaim" in volume:
                self._volumes[name] = self._claim(volume["persistentVolumeClaim"])
            elif "hostPath" in volume:
                self._volumes[name] = (self._host_path(volume["hostPath"]), False)
            elif (
                "configMap" in volume
                or "secret" in volume
                or "downwardAPI" in volume
                or "projected" in volume
            ):
                self._volumes[name] = (self._file_volume(name, volume), True)
            else:
                kinds = sorted(k for k in volume if k != "name")
                raise _Retry("ContainerCreating", f"volume {name}: unsupported volume type {kinds}")

    def _empty_dir(self, name: str, source: Mapping[str, Any]) -> Path:
        path = self._plugin_dir("empty-dir", name)
        path.mkdir(parents=True, exist_ok=True)
        if source.get("medium") == "Memory":
            if path not in mount_points():
                tmpfs_mount(path, quantity_bytes(source["sizeLimit"]) if source.get("sizeLimit") else None)
                self._mounts.append(path)
        else:
            os.chmod(path, 0o777)
        return path

    def _claim(self, source: Mapping[str, Any]) -> tuple[Path, bool]:
        claim = str(source["claimName"])
        read_only = bool(source.get("readOnly"))
        kube = self.node.kube
        try:
            pvc = kube.request("GET", f"/api/v1/namespaces/{self.namespace}/persistentvolumeclaims/{claim}")
        except ApiError as exc:
            raise _Retry("ContainerCreating", f"persistentvolumeclaim {claim!r}: {exc.message}") from exc
        pv_name = (pvc.get("spec") or {}).get("volumeName")
        if (pvc.get("status") or {}).get("phase") != "Bound" or not pv_name:
            raise _Retry("ContainerCreating", f"persistentvolumeclaim {claim!r} is not bound")
        try:
            pv = kube.request("GET", f"/api/v1/persistentvolumes/{pv_name}")
        except ApiError as exc:
            raise _Retry("ContainerCreating", f"persistentvolume {pv_name!r}: {exc.message}") from exc
        spec = pv.get("spec") or {}
        if "local" in spec:
            source_path = Path(spec["local"]["path"])
        elif "hostPath" in spec:
            source_path = Path(spec["hostPath"]["path"])
            if spec["hostPath"].get("type") == "DirectoryOrCreate":
                source_path.mkdir(parents=True, exist_ok=True)
        else:
            raise _Retry(
                "ContainerCreating", f"persistentvolume {pv_name!r}: only local and hostPath are supported"
            )
        if not source_path.is_dir():
            raise _Retry(
                "ContainerCreating", f"persistentvolume {pv_name!r}: {source_path} is not a directory"
            )
        target = self._plugin_dir("local-volume", str(pv_name))
        if target not in mount_points():
            bind_mount(source_path, target, read_only=read_only)
            self._mounts.append(target)
        return target, read_only

    def _host_path(self, source: Mapping[str, Any]) -> Path:
        path = Path(source["path"])
        kind = source.get("type") or ""
        if kind == "DirectoryOrCreate":
            path.mkdir(parents=True, exist_ok=True)
        elif kind == "FileOrCreate" and not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        if not path.exists():
            raise _Retry("ContainerCreating", f"hostPath {path} does not exist")
        return path

    def _file_volume(self, name: str, volume: Mapping[str, Any]) -> Path:
        files: dict[str, tuple[bytes, int]] = {}
        if "configMap" in volume or "secret" in volume:
            kind, key = ("configmaps", "configMap") if "configMap" in volume else ("secrets", "secret")
            plugin = "configmap" if kind == "configmaps" else "secret"
            source = volume[key]
            default_mode = int(source.get("defaultMode", 0o644))
            files.update(self._projected_config(kind, source, default_mode))
        elif "downwardAPI" in volume:
            plugin = "downward-api"
            source = volume["downwardAPI"]
            files.update(self._downward(source.get("items") or [], int(source.get("defaultMode", 0o644))))
        else:
            plugin = "projected"
            source = volume["projected"]
            default_mode = int(source.get("defaultMode", 0o644))
            for item in source.get("sources") or []:
                if "serviceAccountToken" in item:
                    token = item["serviceAccountToken"]
                    files[str(token["path"])] = (self._token(token).encode(), default_mode)
                elif "configMap" in item:
                    files.update(self._projected_config("configmaps", item["configMap"], default_mode))
                elif "secret" in item:
                    files.update(self._projected_config("secrets", item["secret"], default_mode))
                elif "downwardAPI" in item:
                    files.update(self._downward(item["downwardAPI"].get("items") or [], default_mode))
                else:
                    raise _Retry("ContainerCreating", f"volume {name}: unsupported projection {sorted(item)}")
        path = self._plugin_dir(plugin, name)
        path.mkdir(parents=True, exist_ok=True)
        for relative, (data, mode) in files.items():
            target = path / PurePosixPath(relative)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            os.chmod(target, mode)
        return path

    def _projected_config(
        self, kind: str, source: Mapping[str, Any], default_mode: int
    ) -> dict[str, tuple[bytes, int]]:
        name = source.get("name") or source.get("secretName")
        data = self._config_data(kind, str(name), optional=bool(source.get("optional")))
        items = source.get("items")
        if not items:
            return {k: (v, default_mode) for k, v in data.items()}
        files = {}
        for item in items:
            if item["key"] not in data:
                if source.get("optional"):
                    continue
                raise _Retry("ContainerCreating", f"{kind} {name}: no key {item['key']!r}")
            files[str(item["path"])] = (data[item["key"]], int(item.get("mode", default_mode)))
        return files

    def _downward(
        self, items: Sequence[Mapping[str, Any]], default_mode: int
    ) -> dict[str, tuple[bytes, int]]:
        files = {}
        for item in items:
            value = self._field(str(item["fieldRef"]["fieldPath"])) if "fieldRef" in item else ""
            files[str(item["path"])] = (value.encode(), int(item.get("mode", default_mode)))
        return files

    def _token(self, source: Mapping[str, Any]) -> str:
        account = self.spec.get("serviceAccountName") or "default"
        body: dict[str, Any] = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "expirationSeconds": int(source.get("expirationSeconds", 3607)),
                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": self.name, "uid": self.uid},
            },
        }
        if source.get("audience"):
            body["spec"]["audiences"] = [source["audience"]]
        try:
            review = self.node.kube.request(
                "POST", f"/api/v1/namespaces/{self.namespace}/serviceaccounts/{account}/token", body=body
            )
        except ApiError as exc:
            raise _Retry("ContainerCreating", f"service account token for {account}: {exc.message}") from exc
        return str(review["status"]["token"])

    def _teardown_volumes(self) -> None:
        if self._torn_down:
            return
        for target in reversed(self._mounts):
            try:
                unmount(target)
            except OSError as exc:
                self.double._record_error(f"pod {self.namespace}/{self.name}: unmount {target}: {exc}")
        self._mounts.clear()
        if not self.double.stopping:  # a node that goes away keeps its files, like a kubelet that stops
            _safe_rmtree(self.pod_dir / "volumes")
        self._torn_down = True

    # the API ---------------------------------------------------------------------------------------

    def _conditions_now(self) -> list[dict[str, Any]]:
        spec = self.spec
        inits = [c["name"] for c in spec.get("initContainers") or []]
        regular = [c["name"] for c in spec.get("containers") or []]
        terminal = self._phase in ("Succeeded", "Failed")
        incomplete = [
            n
            for n in inits
            if not (
                "terminated" in self._statuses[n]["state"]
                and self._statuses[n]["state"]["terminated"]["exitCode"] == 0
            )
        ]
        unready = [n for n in regular if not self._statuses[n]["ready"]]

        def condition(kind: str, ok: bool, reason: str = "", message: str = "") -> None:
            wanted = "True" if ok else "False"
            current = self._conditions.get(kind)
            since = current.since if current is not None and current.status == wanted else _now()
            self._conditions[kind] = _Condition(wanted, "" if ok else reason, "" if ok else message, since)

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
        scheduled_since = self._start_time
        for existing in (self.pod.get("status") or {}).get("conditions") or []:
            if existing.get("type") == "PodScheduled" and existing.get("lastTransitionTime"):
                scheduled_since = existing["lastTransitionTime"]
        order = ["PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady"]
        out = []
        for kind in order:
            c = self._conditions.get(kind)
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

    def _status_body(self) -> dict[str, Any]:
        spec = self.spec
        status: dict[str, Any] = {
            "phase": self._phase,
            "conditions": self._conditions_now(),
            "hostIP": LOOPBACK,
            "hostIPs": [{"ip": LOOPBACK}],
            "podIP": LOOPBACK,
            "podIPs": [{"ip": LOOPBACK}],
            "startTime": self._start_time,
            "containerStatuses": [self._statuses[c["name"]] for c in spec.get("containers") or []],
        }
        inits = spec.get("initContainers") or []
        if inits:
            status["initContainerStatuses"] = [self._statuses[c["name"]] for c in inits]
        return status

    def _report(self) -> None:
        """Patch the pod's status subresource (merge patch: the lists are replaced whole)."""
        if self.double.stopping or self.gone.is_set():
            return
        body = {"metadata": {"uid": self.uid}, "status": self._status_body()}
        path = f"/api/v1/namespaces/{self.namespace}/pods/{self.name}/status"
        for attempt in range(5):
            try:
                self.node.kube.request("PATCH", path, body=body, content_type=MERGE_PATCH)
                return
            except ApiError as exc:
                if exc.status == 404:
                    self.mark_gone()
                    return
                if exc.status < 500 and exc.status != 429:
                    raise
                error: Exception = exc
            except OSError as exc:
                error = exc
            if self.double.stopping:
                return
            time.sleep(0.2 * (attempt + 1))
        raise RuntimeError(f"could not report the status of {self.namespace}/{self.name}: {error}")

    def _delete_object(self) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": self.uid},
        }
        path = f"/api/v1/namespaces/{self.namespace}/pods/{self.name}"
        for attempt in range(10):
            try:
                self.node.kube.request("DELETE", path, body=body)
                return
            except ApiError as exc:
                if exc.status in (404, 409):  # gone already, or a new pod of the same name
                    return
                error: Exception = exc
            except OSError as exc:
                error = exc
            if self.double.stopping:
                return
            time.sleep(0.2 * (attempt + 1))
        raise RuntimeError(f"could not delete {self.namespace}/{self.name}: {error}")


# --- one node -------------------------------------------------------------------------------------


class _Node:
    def __init__(self, double: NodeDouble, spec: NodeSpec, kube: KubeClient) -> None:
        self.double, self.spec, self.kube = double, spec, kube
        self.name = spec.name
        self.uid = ""
        self.threads: list[threading.Thread] = []

    # registration and heartbeat -------------------------------------------------------------------

    def _status(self) -> dict[str, Any]:
        now = _now()
        resources = self.spec.resources()

        def condition(kind: str, status: str, reason: str, message: str) -> dict[str, str]:
            return {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": now,
                "lastTransitionTime": self.double._started_at,
            }

        return {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [
                condition(
                    "MemoryPressure",
                    "False",
                    "KubeletHasSufficientMemory",
                    "kubelet has sufficient memory available",
                ),
                condition(
                    "DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"
                ),
                condition(
                    "PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"
                ),
                condition(
                    "Ready", "True", "KubeletReady", "kubelet is posting ready status (aicert node double)"
                ),
            ],
            "addresses": [
                {"type": "InternalIP", "address": LOOPBACK},
                {"type": "Hostname", "address": self.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": hashlib.sha256(self.name.encode()).hexdigest()[:32],
                "systemUUID": hashlib.sha256(b"uuid" + self.name.encode()).hexdigest()[:32],
                "bootID": self.double._boot_id,
                "kernelVersion": platform.release(),
                "osImage": "aicert node double (bubblewrap)",
                "containerRuntimeVersion": "bwrap://0.8",
                "kubeletVersion": _kubernetes_version(),
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": _arch(),
            },
        }

    def register(self) -> None:
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "labels": self.spec.node_labels(),
                "annotations": {"volumes.kubernetes.io/controller-managed-attach-detach": "true"},
            },
            "spec": {},
            "status": self._status(),
        }
        if self.spec.taints:
            body["spec"]["taints"] = [dict(t) for t in self.spec.taints]
        try:
            node = self.kube.request("POST", "/api/v1/nodes", body=body)
        except ApiError as exc:
            if exc.status != 409:
                raise
            node = self.kube.request(
                "PATCH",
                f"/api/v1/nodes/{self.name}",
                body={"metadata": {"labels": self.spec.node_labels()}},
                content_type=MERGE_PATCH,
            )
        self.uid = str(node["metadata"]["uid"])
        self.post_status()
        self.renew_lease()

    def post_status(self) -> None:
        self.kube.request(
            "PATCH",
            f"/api/v1/nodes/{self.name}/status",
            body={"status": self._status()},
            content_type=MERGE_PATCH,
        )

    def renew_lease(self) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/{NODE_LEASE_NAMESPACE}/leases"
        spec = {
            "holderIdentity": self.name,
            "leaseDurationSeconds": LEASE_DURATION_SECONDS,
            "renewTime": _now_micro(),
        }
        try:
            self.kube.request("PATCH", f"{path}/{self.name}", body={"spec": spec}, content_type=MERGE_PATCH)
        except ApiError as exc:
            if exc.status != 404:
                raise
            owner = {"apiVersion": "v1", "kind": "Node", "name": self.name, "uid": self.uid}
            self.kube.request(
                "POST",
                path,
                body={
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {
                        "name": self.name,
                        "namespace": NODE_LEASE_NAMESPACE,
                        "ownerReferences": [owner],
                    },
                    "spec": spec,
                },
            )

    def heartbeat_loop(self) -> None:
        beats = 0
        while not self.double._stop.wait(self.double.heartbeat_seconds):
            beats += 1
            try:
                self.renew_lease()
                if beats % 6 == 0:
                    self.post_status()
            except Exception as exc:
                if not self.double.stopping:
                    log.warning("node %s: heartbeat failed: %s", self.name, exc)

    # pods -----------------------------------------------------------------------------------------

    def watch_loop(self) -> None:
        selector = {"fieldSelector": f"spec.nodeName={self.name}"}
        while not self.double.stopping:
            try:
                listed = self.kube.request("GET", "/api/v1/pods", query=selector)
                version = str(listed["metadata"]["resourceVersion"])
                seen = set()
                for pod in listed.get("items") or []:
                    seen.add(pod["metadata"]["uid"])
                    self.double._on_pod(self, pod)
                self.double._forget_missing(self, seen)
                while not self.double.stopping:
                    stream = self.kube.watch(
                        "/api/v1/pods",
                        {
                            **selector,
                            "resourceVersion": version,
                            "allowWatchBookmarks": "true",
                            "timeoutSeconds": "60",
                        },
                        timeout=90,
                    )
                    expired = False
                    with self.double._track(stream):
                        for event in stream:
                            kind, obj = event.get("type"), event.get("object") or {}
                            if kind == "ERROR":
                                expired = True
                                break
                            version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                            if kind == "BOOKMARK":
                                continue
                            self.double._on_pod(self, obj, deleted=kind == "DELETED")
                    if expired:
                        break
            except Exception as exc:
                if self.double.stopping:
                    return
                log.warning("node %s: pod watch failed, listing again: %s", self.name, exc)
                self.double._stop.wait(1.0)


# --- the double -----------------------------------------------------------------------------------


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
        self.host_binds = self._binds(host_binds, venv_mount)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._nodes: list[_Node] = []
        self._workers: dict[str, _PodWorker] = {}
        self._finished: set[str] = set()
        self._streams: set[_WatchStream] = set()
        self._errors: list[str] = []
        self._started_at = _now()
        self._boot_id = secrets.token_hex(16)
        self._running = False

    def _binds(self, host_binds: Sequence[str], venv_mount: str | None) -> list[tuple[str, str]]:
        binds = [(p, p) for p in host_binds]
        real = Path(self.python_executable).resolve()
        prefix = str(real.parents[1]) if len(real.parents) > 1 else str(real.parent)
        if not any(_under(prefix, p) for p in host_binds):
            binds.append((prefix, prefix))
        # The project's own sources, wherever the checkout is (editable installs point there).
        for package in ("aicert", "aicert_agent"):
            spec = importlib.util.find_spec(package)
            if spec is not None and spec.origin:
                source_root = str(
                    Path(spec.origin).resolve().parents[3]
                )  # <repo>/<part>/src/<pkg>/__init__.py
                if not any(_under(source_root, p) for p, _ in binds):
                    binds.append((source_root, source_root))
        venv = Path(self.python_executable).absolute().parent.parent
        if (venv / "pyvenv.cfg").exists():
            if not any(_under(str(venv), p) for p in host_binds):
                binds.append((str(venv), str(venv)))
            if venv_mount:
                binds.append((str(venv), venv_mount))
        return binds

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
        (self.kubelet_root / "pods").mkdir(parents=True, exist_ok=True)
        nodes = []
        for spec in self.specs:
            kube = KubeClient(
                self.cluster.kubeconfig_for_node(spec.name), self.kubelet_root / "credentials" / spec.name
            )
            node = _Node(self, spec, kube)
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
        self._running = False

    # pods -----------------------------------------------------------------------------------------

    def _on_pod(self, node: _Node, pod: dict[str, Any], *, deleted: bool = False) -> None:
        uid = str(pod["metadata"]["uid"])
        with self._lock:
            if self.stopping:
                return
            worker = self._workers.get(uid)
            if worker is None:
                if deleted or uid in self._finished:
                    return
                worker = _PodWorker(self, node, pod)
                self._workers[uid] = worker
                worker.thread.start()
                return
        if deleted:
            worker.mark_gone()
        else:
            worker.update(pod)

    def _forget_missing(self, node: _Node, seen: set[str]) -> None:
        with self._lock:
            missing = [w for uid, w in self._workers.items() if w.node is node and uid not in seen]
        for worker in missing:
            worker.mark_gone()

    def _forget(self, worker: _PodWorker) -> None:
        with self._lock:
            if self._workers.get(worker.uid) is worker:
                del self._workers[worker.uid]
            if not self.stopping:
                self._finished.add(worker.uid)

    @contextlib.contextmanager
    def _track(self, stream: _WatchStream) -> Iterator[None]:
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

    def _image(self, ref: str) -> _RunImage:
        if ref == self.agent_image:
            bin_dir = str(Path(self.python_executable).parent)
            return _RunImage(
                app_dir=None,
                entrypoint=["python", "-m", "aicert_agent"],
                cmd=[],
                env={"PATH": f"{bin_dir}:{DEFAULT_PATH}"},
                workdir="/",
                image_id=agent_image_id(ref),
                host_python=True,
            )
        resolved = self.images.resolve(ref)
        return _RunImage(
            app_dir=resolved.app_dir,
            entrypoint=resolved.entrypoint,
            cmd=resolved.cmd,
            env=resolved.env,
            workdir=resolved.workdir,
            image_id=resolved.image_id,
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

    def pod_dir(self, pod_uid: str) -> Path:
        return self.kubelet_root / "pods" / pod_uid
