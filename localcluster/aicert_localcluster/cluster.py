"""A local Kubernetes control plane of the real upstream binaries, run as subprocesses on loopback.

etcd, kube-apiserver (TLS, client-certificate auth, Node+RBAC authorization, NodeRestriction,
service-account token issuing), kube-controller-manager (all controllers, per-controller service-account
credentials) and kube-scheduler. There is no kubelet, kube-proxy or CNI here: a real node
(aicert_localcluster.realnode: upstream kubelet, containerd, runc and CNI plugins) registers its Node
and runs the pods bound to it.

    with LocalCluster(tmp_path / "cluster") as cluster:
        cluster.kubectl("get", "namespaces")

Everything the cluster writes (PKI, kubeconfigs, etcd data, logs) is under `workdir`; every server binds
127.0.0.1 only, except, with `pod_network=True`, kube-apiserver: it then binds an address of its own
that pods on real nodes can reach (10.244.N.1 on a bridge `aicertbrN` with no ports, N the lowest free
node index; removed by stop()), as pods reach a cloud cluster's API server. etcd runs with `--unsafe-no-fsync`: this cluster is for tests and demos, never for data.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from .binaries import ensure_binaries
from .pki import CertPair, ClusterPKI

LOOPBACK = "127.0.0.1"
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
KUBELET_CLIENT_USER = "kube-apiserver-kubelet-client"
KUBELET_CLIENT_STEM = "kube-apiserver-kubelet-client"
SERVICE_IP = "10.0.0.1"  # the `kubernetes` Service's ClusterIP: first address of the range
ISSUER = "https://kubernetes.default.svc.cluster.local"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
STOP_GRACE_SECONDS = 10.0
LOG_TAIL_LINES = 40
START_ATTEMPTS = 3

_PR_SET_PDEATHSIG = 1


class LocalClusterError(RuntimeError):
    """The cluster failed to start or become ready; the message carries the failing component's log tail."""


class KubectlError(subprocess.CalledProcessError):
    """A kubectl call exited non-zero; unlike CalledProcessError its message includes kubectl's stderr."""

    def __str__(self) -> str:
        stderr = (self.stderr or "").strip()
        return f"{super().__str__()}\n{stderr}" if stderr else super().__str__()


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """preexec_fn: SIGKILL the child if the Python process dies without calling stop() (Linux)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class _Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    log_handle: IO[bytes]


class LocalCluster:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler on free loopback ports.

    A context manager: `__enter__` starts the cluster and waits until it is ready, `__exit__` stops it.
    """

    def __init__(
        self, workdir: Path, *, bin_dir: Path | None = None, audit: bool = False, pod_network: bool = False
    ) -> None:
        """`audit`: kube-apiserver writes one JSON line per finished request to `audit_log` (who,
        verb, resource), for benchmarks that count requests by client. `pod_network`: kube-apiserver
        serves at `api_address`, which pods of real nodes reach (needs root: it makes a bridge)."""
        self.workdir = Path(workdir).resolve()
        self.audit = audit
        self.pod_network = pod_network
        self.api_address = LOOPBACK
        self._bridge = ""
        self.bin_dir = Path(bin_dir).resolve() if bin_dir is not None else ensure_binaries()
        missing = [n for n in (*COMPONENTS, "kubectl") if not (self.bin_dir / n).is_file()]
        if missing:
            raise LocalClusterError(f"{self.bin_dir} lacks {', '.join(missing)}")
        self.pki_dir = self.workdir / "pki"
        self.kubeconfig_dir = self.workdir / "kubeconfigs"
        self.log_dir = self.workdir / "logs"
        self.etcd_dir = self.workdir / "etcd"
        self.ca_file = self.pki_dir / "ca.crt"
        self.admin_kubeconfig = self.kubeconfig_dir / "admin.kubeconfig"
        self.audit_log = self.log_dir / "audit.log"
        self.issuer = ISSUER
        self.api_audiences = (ISSUER,)
        self.apiserver_port = 0
        self.server = ""
        self.etcd_url = ""
        self.controller_manager_port = 0
        self.scheduler_port = 0
        self._pki: ClusterPKI | None = None
        self._processes: list[_Process] = []
        self._lock = threading.Lock()

    # lifecycle ------------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self, timeout: float = 120) -> None:
        """Start every component in order and wait until the cluster is ready (see `wait_ready`).

        On failure everything started so far is stopped and LocalClusterError carries the failing
        component's log tail. Starting a running cluster is an error; after stop() it starts afresh.
        """
        if self._processes:
            raise LocalClusterError("the cluster is already running")
        deadline = time.monotonic() + timeout
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                self._prepare()
                self._start_etcd(deadline)
                self._start_apiserver(deadline)
                self._start_controller_manager()
                self._start_scheduler()
                self.wait_ready(max(deadline - time.monotonic(), 1.0))
                return
            except LocalClusterError as exc:
                self.stop()
                # A free port picked here can be taken by someone else before the server binds it.
                if "address already in use" not in str(exc) or attempt == START_ATTEMPTS:
                    raise
            except BaseException:
                self.stop()
                raise

    def stop(self) -> None:
        """Stop every component (SIGTERM, SIGKILL after a grace period): clients first, etcd last. Idempotent."""
        with self._lock:
            processes, self._processes = self._processes, []
        # Clients first, etcd last, so nobody waits on a server that has already gone.
        stages = [
            [p for p in processes if p.name in ("kube-scheduler", "kube-controller-manager")],
            [p for p in processes if p.name == "kube-apiserver"],
            [p for p in processes if p.name == "etcd"],
        ]
        for stage in stages:
            for process in stage:
                if process.popen.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        process.popen.send_signal(signal.SIGTERM)
            for process in stage:
                try:
                    process.popen.wait(timeout=STOP_GRACE_SECONDS)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        process.popen.kill()
                    process.popen.wait()
                process.log_handle.close()
        if self._bridge:
            from .realnode import host

            problems = host.delete_bridge(self._bridge)
            self._bridge, self.api_address = "", LOOPBACK
            if problems:
                raise LocalClusterError("; ".join(problems))

    def _reserve_api_address(self) -> None:
        """A bridge of its own holding 10.244.N.1/24 (N free), the address kube-apiserver binds."""
        from .realnode import host
        from .realnode.config import NodeLayout
        from .realnode.node import free_node_index

        for _ in range(5):  # another node or cluster may claim the same index first
            layout = NodeLayout(Path("/"), Path("/"), free_node_index())
            try:
                host.create_bridge(layout.bridge, layout.node_ip)
            except host.HostError:
                continue
            self._bridge, self.api_address = layout.bridge, layout.node_ip
            return
        raise LocalClusterError("could not claim a free 10.244.N.0/24 network for the API server")

    @property
    def running(self) -> bool:
        return bool(self._processes) and all(p.popen.poll() is None for p in self._processes)

    def logs(self) -> dict[str, Path]:
        """Each component's log file (they exist once the component was started)."""
        return {name: self.log_dir / f"{name}.log" for name in COMPONENTS}

    # readiness ------------------------------------------------------------------------------------

    def wait_ready(self, timeout: float = 60) -> None:
        """Wait until /readyz is ok, the controller manager and scheduler are healthy and the `default`
        ServiceAccount exists in the `default` namespace (made by the controller manager)."""
        deadline = time.monotonic() + timeout
        self._poll(lambda: self._get(self.server, "/readyz") == "ok", deadline, "kube-apiserver", "/readyz")
        self._poll(
            lambda: self._get(f"https://{LOOPBACK}:{self.controller_manager_port}", "/healthz") == "ok",
            deadline,
            "kube-controller-manager",
            "/healthz",
        )
        self._poll(
            lambda: self._get(f"https://{LOOPBACK}:{self.scheduler_port}", "/healthz") == "ok",
            deadline,
            "kube-scheduler",
            "/healthz",
        )
        self._poll(
            lambda: (
                self.kubectl("get", "serviceaccount", "default", "-n", "default", check=False).returncode == 0
            ),
            deadline,
            "kube-controller-manager",
            "the default ServiceAccount",
        )

    def _poll(self, ready: Callable[[], bool], deadline: float, component: str, what: str) -> None:
        while True:
            self._check_alive()
            with contextlib.suppress(OSError, ssl.SSLError, urllib.error.URLError, ValueError):
                if ready():
                    return
            if time.monotonic() >= deadline:
                raise LocalClusterError(
                    f"{what} not ready in time; tail of {component}'s log "
                    f"({self.log_dir / (component + '.log')}):\n{_tail(self.log_dir / (component + '.log'))}"
                )
            time.sleep(0.25)

    def _check_alive(self) -> None:
        for process in self._processes:
            code = process.popen.poll()
            if code is not None:
                raise LocalClusterError(
                    f"{process.name} exited with code {code}; tail of {process.log}:\n{_tail(process.log)}"
                )

    def _get(self, base: str, path: str) -> str:
        """GET base+path; for the API server with the cluster CA and the admin cert, for the controller
        manager and scheduler (self-signed serving certs, /healthz open to all) without verification."""
        if base == self.server:
            context = ssl.create_default_context(cafile=str(self.ca_file))
            admin = self._admin_pair()
            context.load_cert_chain(str(admin.cert), str(admin.key))
        else:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        try:
            with urllib.request.urlopen(base + path, context=context, timeout=5) as response:
                body: bytes = response.read()
                return body.decode().strip()
        except urllib.error.HTTPError as exc:
            return f"HTTP {exc.code}"

    # kubeconfigs and kubectl ----------------------------------------------------------------------

    def kubeconfig_for_node(self, node_name: str) -> Path:
        """A kubeconfig whose client certificate says CN=system:node:<name>, O=system:nodes (what a
        kubelet has): the Node authorizer and NodeRestriction scope it to that node."""
        path = self.kubeconfig_dir / f"node-{node_name}.kubeconfig"
        if not path.exists():
            pair = self._require_pki().client(
                f"node-{node_name}", f"system:node:{node_name}", ("system:nodes",)
            )
            self._write_kubeconfig(path, f"system:node:{node_name}", pair)
        return path

    def kubelet_serving_cert(self, node_name: str, node_ip: str) -> CertPair:
        """A serving certificate for a real node's kubelet at `node_ip`, from the cluster CA (the API
        server checks it when it calls the kubelet)."""
        return self._require_pki().server(f"kubelet-{node_name}", f"system:node:{node_name}", (node_ip,))

    def kubeconfig_for_client(self, user: str, groups: Sequence[str] = ()) -> Path:
        """A kubeconfig with a client certificate for any user name and groups."""
        stem = "user-" + "".join(c if c.isalnum() or c in "-." else "_" for c in user)
        path = self.kubeconfig_dir / f"{stem}.kubeconfig"
        pair = self._require_pki().client(stem, user, tuple(groups))
        self._write_kubeconfig(path, user, pair)
        return path

    def kubeconfig_for_service_account(
        self,
        namespace: str,
        name: str,
        *,
        bound_pod: tuple[str, str] | None = None,
        expiration_seconds: int = 3600,
    ) -> Path:
        """A kubeconfig with a token from the TokenRequest API for ServiceAccount namespace/name (created,
        with its namespace, if missing). `bound_pod=(pod name, pod uid)` binds the token to that pod in
        the same namespace: it dies with the pod, and when the pod is bound to a node the token carries
        the node's name (user info extra `authentication.kubernetes.io/node-name`)."""
        if self.kubectl("get", "namespace", namespace, check=False).returncode != 0:
            self.kubectl("create", "namespace", namespace, check=False)
        if self.kubectl("get", "serviceaccount", name, "-n", namespace, check=False).returncode != 0:
            created = self.kubectl("create", "serviceaccount", name, "-n", namespace, check=False)
            if created.returncode != 0 and "AlreadyExists" not in created.stderr:
                raise KubectlError(created.returncode, created.args, created.stdout, created.stderr)
        args = ["create", "token", name, "-n", namespace, f"--duration={expiration_seconds}s"]
        suffix = ""
        if bound_pod is not None:
            pod_name, pod_uid = bound_pod
            args += [
                "--bound-object-kind=Pod",
                f"--bound-object-name={pod_name}",
                f"--bound-object-uid={pod_uid}",
            ]
            suffix = f"-pod-{pod_name}"
        token = self.kubectl(*args).stdout.strip()
        path = self.kubeconfig_dir / f"sa-{namespace}-{name}{suffix}.kubeconfig"
        user = f"system:serviceaccount:{namespace}:{name}"
        self._write_config(path, user, {"token": token}, namespace=namespace)
        return path

    def kubectl(
        self,
        *args: str,
        kubeconfig: Path | None = None,
        check: bool = True,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run the cluster's kubectl (admin kubeconfig unless given); raises KubectlError when check."""
        cmd = [str(self.bin_dir / "kubectl"), f"--kubeconfig={kubeconfig or self.admin_kubeconfig}", *args]
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        proc = subprocess.run(
            cmd,
            input=input,
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise KubectlError(proc.returncode, cmd, proc.stdout, proc.stderr)
        return proc

    def kubectl_json(self, *args: str, kubeconfig: Path | None = None) -> Any:
        """`kubectl ... -o json`, parsed."""
        return json.loads(self.kubectl(*args, "-o", "json", kubeconfig=kubeconfig).stdout)

    def _require_pki(self) -> ClusterPKI:
        if self._pki is None:
            raise LocalClusterError("the cluster has not been started")
        return self._pki

    def _admin_pair(self) -> CertPair:
        return CertPair(self.pki_dir / "clients/admin.crt", self.pki_dir / "clients/admin.key")

    def _write_kubeconfig(self, path: Path, user: str, pair: CertPair) -> None:
        self._write_config(
            path,
            user,
            {
                "client-certificate-data": _b64(pair.cert.read_bytes()),
                "client-key-data": _b64(pair.key.read_bytes()),
            },
        )

    def _write_config(self, path: Path, user: str, credentials: dict[str, str], namespace: str = "") -> None:
        """A self-contained kubeconfig (JSON is YAML; certificates inlined, so it can be copied)."""
        context: dict[str, str] = {"cluster": "aicert-local", "user": user}
        if namespace:
            context["namespace"] = namespace
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "aicert-local",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority-data": _b64(self.ca_file.read_bytes()),
                    },
                }
            ],
            "users": [{"name": user, "user": credentials}],
            "contexts": [{"name": "aicert-local", "context": context}],
            "current-context": "aicert-local",
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(config, handle, indent=2)
        tmp.replace(path)

    # components -----------------------------------------------------------------------------------

    def _prepare(self) -> None:
        # A fresh cluster every start: new PKI, empty etcd. Only our own subdirectories are cleared.
        for directory in (self.pki_dir, self.kubeconfig_dir, self.etcd_dir, self.workdir / "certs"):
            shutil.rmtree(directory, ignore_errors=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if self.pod_network and not self._bridge:
            self._reserve_api_address()
        self.apiserver_port = free_port()
        self.server = f"https://{self.api_address}:{self.apiserver_port}"
        self._pki = ClusterPKI.create(
            self.pki_dir,
            server_ips=tuple(dict.fromkeys((LOOPBACK, SERVICE_IP, self.api_address))),
            server_names=(
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
        )
        admin = self._pki.client("admin", "aicert-admin", ("system:masters",))
        self._write_kubeconfig(self.admin_kubeconfig, "aicert-admin", admin)
        kcm = self._pki.client(
            "kube-controller-manager", "system:kube-controller-manager", ("system:kube-controller-manager",)
        )
        self._write_kubeconfig(self.kubeconfig_dir / "kube-controller-manager.kubeconfig", "kcm", kcm)
        scheduler = self._pki.client("kube-scheduler", "system:kube-scheduler", ("system:kube-scheduler",))
        self._write_kubeconfig(self.kubeconfig_dir / "kube-scheduler.kubeconfig", "scheduler", scheduler)
        # kube-apiserver's identity towards kubelets (logs, exec, port-forward): a real node's kubelet
        # authorizes it by a SubjectAccessReview (RealNode binds it to system:kubelet-api-admin).
        self._pki.client(KUBELET_CLIENT_STEM, KUBELET_CLIENT_USER)

    def _spawn(self, name: str, args: list[str]) -> None:
        log = self.log_dir / f"{name}.log"
        handle = open(log, "ab")  # noqa: SIM115 - closed in stop()
        handle.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(args)}\n".encode())
        handle.flush()
        popen = subprocess.Popen(
            [str(self.bin_dir / name), *args],
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        with self._lock:
            self._processes.append(_Process(name, popen, log, handle))

    def _start_etcd(self, deadline: float) -> None:
        client_port, peer_port = free_port(), free_port()
        self.etcd_url = f"http://{LOOPBACK}:{client_port}"
        peer_url = f"http://{LOOPBACK}:{peer_port}"
        self._spawn(
            "etcd",
            [
                "--name=aicert",
                f"--data-dir={self.etcd_dir}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=aicert={peer_url}",
                "--initial-cluster-state=new",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )

        def healthy() -> bool:
            with urllib.request.urlopen(self.etcd_url + "/health", timeout=5) as response:
                body = json.loads(response.read())
            return isinstance(body, dict) and body.get("health") == "true"

        self._poll(healthy, deadline, "etcd", "etcd /health")

    def _start_apiserver(self, deadline: float) -> None:
        pki = self._require_pki()
        self._spawn(
            "kube-apiserver",
            [
                f"--advertise-address={self.api_address}",
                f"--bind-address={self.api_address}",
                f"--secure-port={self.apiserver_port}",
                f"--etcd-servers={self.etcd_url}",
                f"--cert-dir={self.workdir / 'certs' / 'kube-apiserver'}",
                f"--tls-cert-file={pki.apiserver.cert}",
                f"--tls-private-key-file={pki.apiserver.key}",
                f"--client-ca-file={pki.ca_cert_file}",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                f"--service-account-issuer={self.issuer}",
                f"--service-account-key-file={pki.sa_pub_file}",
                f"--service-account-signing-key-file={pki.sa_key_file}",
                f"--api-audiences={','.join(self.api_audiences)}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--allow-privileged=true",
                f"--kubelet-client-certificate={pki.directory / 'clients' / (KUBELET_CLIENT_STEM + '.crt')}",
                f"--kubelet-client-key={pki.directory / 'clients' / (KUBELET_CLIENT_STEM + '.key')}",
                # a kubelet's serving certificate must be the cluster CA's, for the address it is reached at
                f"--kubelet-certificate-authority={pki.ca_cert_file}",
                "--kubelet-preferred-address-types=InternalIP",
                # No real endpoint for the `kubernetes` Service: its address would be loopback, which
                # the endpoint reconciler rejects, and nothing here routes Service IPs anyway.
                "--endpoint-reconciler-type=none",
                "--profiling=false",
                "--v=1",
                *self._audit_flags(),
            ],
        )
        self._poll(lambda: self._get(self.server, "/readyz") == "ok", deadline, "kube-apiserver", "/readyz")

    def _audit_flags(self) -> list[str]:
        if not self.audit:
            return []
        policy = self.workdir / "audit-policy.yaml"
        policy.write_text(
            "apiVersion: audit.k8s.io/v1\nkind: Policy\n"
            "omitStages: [RequestReceived, ResponseStarted]\nrules:\n  - level: Metadata\n"
        )
        self.log_dir.mkdir(parents=True, exist_ok=True)
        return [
            f"--audit-policy-file={policy}",
            f"--audit-log-path={self.audit_log}",
            "--audit-log-maxsize=0",
        ]

    def _start_controller_manager(self) -> None:
        pki = self._require_pki()
        kubeconfig = self.kubeconfig_dir / "kube-controller-manager.kubeconfig"
        self.controller_manager_port = free_port()
        self._spawn(
            "kube-controller-manager",
            [
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                f"--bind-address={LOOPBACK}",
                f"--secure-port={self.controller_manager_port}",
                f"--cert-dir={self.workdir / 'certs' / 'kube-controller-manager'}",
                "--leader-elect=false",
                "--controllers=*",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={pki.sa_key_file}",
                f"--root-ca-file={pki.ca_cert_file}",
                f"--cluster-signing-cert-file={pki.ca_cert_file}",
                f"--cluster-signing-key-file={pki.ca_key_file}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--profiling=false",
                "--v=1",
            ],
        )

    def _start_scheduler(self) -> None:
        kubeconfig = self.kubeconfig_dir / "kube-scheduler.kubeconfig"
        self.scheduler_port = free_port()
        self._spawn(
            "kube-scheduler",
            [
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                f"--bind-address={LOOPBACK}",
                f"--secure-port={self.scheduler_port}",
                f"--cert-dir={self.workdir / 'certs' / 'kube-scheduler'}",
                "--leader-elect=false",
                "--profiling=false",
                "--v=1",
            ],
        )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
