"""NetworkPolicyEnforcer: kube-network-policies (SIG Network's reference NetworkPolicy implementation)
judging the traffic of the pods of some real nodes of a LocalCluster against the cluster's
NetworkPolicies.

    with RealNode(cluster, ...) as node, NetworkPolicyEnforcer(cluster, tmp / "np", nodes=[node]):
        ...  # NetworkPolicies selecting pods on `node` are enforced

How kube-network-policies works (its pkg/networkpolicy): packets of new connections are queued to
userspace (nfqueue 100); for each, the process looks up the pods owning the source and destination IPs
(any node's: its pod informer lists all pods), evaluates the source pod's egress and the destination
pod's ingress policies, and answers accept or drop. Which packets are queued is decided by an nftables
table of its own (`inet kube-network-policies`: the IPs of the pods on *its* node that some policy
selects; established connections, and packets of the host's root sockets, are not queued).

Why the queueing rules are ours here: this machine's kernel has no nftables `queue` expression
(CONFIG_NFT_QUEUE is not set: `nft add rule ... queue num 100` fails with "No such file or directory"),
so its table cannot be created (its sync logs that error and it keeps judging what it is given). The
kernel does have iptables' NFQUEUE target (xt, through iptables-nft). So the same queueing is done with
iptables rules, for every pod of the enforced nodes (as kube-network-policies' own AdminNetworkPolicy
mode queues every packet, not only policed pods'); pods without a policy are accepted by its verdict.
A side effect used on purpose: one process enforces for any number of nodes on the host (its node name
only decides its own table, which is empty here: it is given a name no node has).

The rules (table `ip mangle`, made by iptables-nft if missing):
- AICERT-NETPOL: established/related -> RETURN; from or to an enforced node's pod subnet -> NFQUEUE
  100 (no bypass: with nobody listening the packet is dropped, fail closed);
- POSTROUTING -> AICERT-NETPOL-OUT: out of `lo` (the host talking to itself, e.g. the API server to
  kubelet on the node IP) and packets of the host's root sockets (as its table does) -> RETURN, else
  AICERT-NETPOL: traffic between pods, and from the host to pods;
- INPUT -> AICERT-NETPOL-IN (when `resident_node`, the default): in from `lo` -> RETURN, else
  AICERT-NETPOL: traffic from a pod to the host itself, e.g. its node IP 10.244.N.1. Kubernetes defines traffic between a pod and its own node as always
  allowed, and kube-network-policies (postrouting only) does not see it; a training pod certified
  `egress: none` must not reach its node's services either, so the test cluster polices it.

IPv6: pods have link-local addresses (fe80::/64) that no pod status lists, so the judge could not
tell whose a packet is and would allow it (an isolated pod reached a host service on [::] that way);
every IPv6 packet from the enforced nodes' bridges is dropped (ip6tables `mangle` PREROUTING ->
AICERT-NETPOL6 -> DROP). The nodes' pods have IPv4 addresses only.

What start() changes on the host, and how stop() undoes it:
- the chains and jumps above (deleted; `ip mangle` and `ip6 mangle` are deleted if start() created
  them and they hold nothing else);
- net.bridge.bridge-nf-call-iptables and -ip6tables must be 1 (a node's pods share its bridge: without it, their
  traffic to each other is bridged past the hooks); when it is not, it is set through the host ledger,
  which puts it back after the last real node or enforcer on the machine;
- its own table, if a kernel lets it make one (deleted by the process on SIGINT, else by stop()).
The process runs in a mount namespace of its own in which a tmpfs over /run holds the ServiceAccount
token and CA at the fixed path its in-cluster client reads (/var/run/secrets/kubernetes.io/
serviceaccount): the host's /run is not touched. Its identity: ServiceAccount
kube-system/aicert-kube-network-policies with the ClusterRole its install manifest documents
(list/watch pods, namespaces, networkpolicies), plus events. One enforcer per network namespace (the
queue number and its table name are per namespace): an abstract unix socket is the lock.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from ..binaries import ensure_node_binaries
from ..cluster import LOOPBACK, LocalCluster, _die_with_parent, _tail, free_port
from . import host
from .node import RealNode

TABLE = "kube-network-policies"  # its own `inet` table; fixed in its command (Config.NFTableName)
QUEUE = 100  # its --nfqueue-id default
NO_NODE = "aicert-netpol-no-local-node"  # its --hostname-override: no pod is "local" to its own table
CHAIN = "AICERT-NETPOL"
OUT_CHAIN = "AICERT-NETPOL-OUT"
IN_CHAIN = "AICERT-NETPOL-IN"
V6_CHAIN = "AICERT-NETPOL6"
MANGLE = "mangle"
SERVICE_ACCOUNT = ("kube-system", "aicert-kube-network-policies")
BRIDGE_NF_SYSCTL = "net/bridge/bridge-nf-call-iptables"
BRIDGE_NF6_SYSCTL = "net/bridge/bridge-nf-call-ip6tables"
# Bound while an enforcer runs: scoped, like the queue and the tables, to the network namespace;
# released by the kernel when the process dies; leaves nothing on the filesystem.
HOST_LOCK = b"\0aicert-localcluster-netpol"
TOKEN_SECONDS = 86400
STOP_GRACE_SECONDS = 20.0  # for its cleanup after SIGINT (it then sleeps 5 s, which stop() cuts short)
POLL_SECONDS = 0.1
SECRETS_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"  # rest.InClusterConfig reads token, ca.crt

# Run inside `unshare --mount --propagation private`: a tmpfs over /run (/var/run is a link to it),
# the token directory bind-mounted where the in-cluster client reads it, then the enforcer.
_LAUNCH = (
    'set -e; mount -t tmpfs -o mode=0755 aicert-netpol /run; mkdir -p "$1"; '
    'mount --bind "$2" "$1"; shift 2; exec "$@"'
)


class NetworkPolicyError(RuntimeError):
    """The enforcer could not start, or stop() could not undo everything it changed."""


# pure: what is run and installed ------------------------------------------------------------------


def cluster_role() -> dict[str, Any]:
    """The ClusterRole kube-network-policies' install.yaml grants it, plus events (it records some)."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": SERVICE_ACCOUNT[1]},
        "rules": [
            {"apiGroups": [""], "resources": ["pods", "namespaces"], "verbs": ["list", "watch"]},
            {
                "apiGroups": ["networking.k8s.io"],
                "resources": ["networkpolicies"],
                "verbs": ["list", "watch"],
            },
            {
                "apiGroups": ["", "events.k8s.io"],
                "resources": ["events"],
                "verbs": ["create", "patch", "update"],
            },
        ],
    }


def cluster_role_binding() -> dict[str, Any]:
    namespace, name = SERVICE_ACCOUNT
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
    }


def enforcer_args(binary: Path, *, metrics_port: int) -> list[str]:
    """Its command line: metrics on loopback only; fail closed (the default: a packet queued with
    nobody to judge it is dropped); no DNS-race workaround rules (needed only before kernel 6.12)."""
    return [
        str(binary),
        f"--hostname-override={NO_NODE}",
        f"--metrics-bind-address={LOOPBACK}:{metrics_port}",
        f"--nfqueue-id={QUEUE}",
        "--fail-open=false",
        "--netfilter-bug-1766-fix=false",
        "-v=2",  # one log line per verdict: the evidence of what it allowed and dropped
    ]


def queue_rules(subnets: Sequence[str], *, resident_node: bool) -> list[list[str]]:
    """The iptables commands (arguments after `iptables -w -t mangle`) that queue the traffic of pods
    in `subnets` to the enforcer, in the order to run them (see the module docstring)."""
    rules = [
        ["-N", CHAIN],
        ["-A", CHAIN, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "RETURN"],
    ]
    for subnet in subnets:
        for direction in ("-s", "-d"):
            rules.append(["-A", CHAIN, direction, subnet, "-j", "NFQUEUE", "--queue-num", str(QUEUE)])
    rules += [
        ["-N", OUT_CHAIN],
        ["-A", OUT_CHAIN, "-o", "lo", "-j", "RETURN"],
        ["-A", OUT_CHAIN, "-m", "owner", "--uid-owner", "0", "-j", "RETURN"],
        ["-A", OUT_CHAIN, "-j", CHAIN],
        ["-A", "POSTROUTING", "-j", OUT_CHAIN],
    ]
    if resident_node:
        rules += [
            ["-N", IN_CHAIN],
            ["-A", IN_CHAIN, "-i", "lo", "-j", "RETURN"],
            ["-A", IN_CHAIN, "-j", CHAIN],
            ["-A", "INPUT", "-j", IN_CHAIN],
        ]
    return rules


def ipv6_rules(bridges: Sequence[str]) -> list[list[str]]:
    """The ip6tables commands (after `ip6tables -w -t mangle`) that drop every IPv6 packet from the
    pods of `bridges`. Pods have link-local IPv6 addresses (fe80::/64 on eth0) that no pod's status
    lists, so the judge cannot tell whose they are and would allow them: an isolated pod could reach
    the host's services on [::] or other pods that way. What cannot be judged is dropped."""
    rules = [["-N", V6_CHAIN], ["-A", V6_CHAIN, "-j", "DROP"]]
    return rules + [["-A", "PREROUTING", "-i", bridge, "-j", V6_CHAIN] for bridge in bridges]


def undo_ipv6_rules(bridges: Sequence[str]) -> list[list[str]]:
    jumps = [["-D", "PREROUTING", "-i", bridge, "-j", V6_CHAIN] for bridge in bridges]
    return [*jumps, ["-F", V6_CHAIN], ["-X", V6_CHAIN]]


def undo_rules(*, resident_node: bool) -> list[list[str]]:
    """The iptables commands that remove what queue_rules added (jumps first, then the chains)."""
    rules = [["-D", "POSTROUTING", "-j", OUT_CHAIN], ["-F", OUT_CHAIN], ["-X", OUT_CHAIN]]
    if resident_node:
        rules += [["-D", "INPUT", "-j", IN_CHAIN], ["-F", IN_CHAIN], ["-X", IN_CHAIN]]
    return [*rules, ["-F", CHAIN], ["-X", CHAIN]]


def only_policies(listing: str) -> bool:
    """`iptables -S` of a table holds nothing but its built-in chains' policies (`-P ...`)."""
    return all(line.startswith("-P ") for line in listing.splitlines() if line.strip())


# host probes --------------------------------------------------------------------------------------


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, stdin=subprocess.DEVNULL)


def nft_table(family: str = "inet", name: str = TABLE) -> str:
    """`nft list table <family> <name>` ("" when there is no such table)."""
    done = _run("nft", "list", "table", family, name)
    return done.stdout if done.returncode == 0 else ""


_TOOLS = {"ip": "iptables", "ip6": "ip6tables"}


def mangle_rules(family: str = "ip") -> str:
    """`iptables -S -t mangle` (`ip6tables` for family "ip6"; "" when the table is not there)."""
    if not nft_table(family, MANGLE):
        return ""
    return _run(_TOOLS[family], "-w", "-t", MANGLE, "-S").stdout


def queue_bound(queue: int, path: Path = Path("/proc/net/netfilter/nfnetlink_queue")) -> bool:
    """A process listens on nfqueue `queue` (a line of /proc/net/netfilter/nfnetlink_queue starts with
    the queue number)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return False
    return any(line.split()[:1] == [str(queue)] for line in lines)


class NetworkPolicyEnforcer:
    """kube-network-policies for the pods of `nodes` (see the module docstring). A context manager;
    start() returns once it listens on its queue and the rules queue the nodes' pods' traffic to it;
    stop() is idempotent and raises NetworkPolicyError naming whatever it could not undo."""

    def __init__(
        self,
        cluster: LocalCluster,
        workdir: Path,
        *,
        nodes: Sequence[RealNode],
        resident_node: bool = True,
        bin_dir: Path | None = None,
        ledger: host.HostLedger | None = None,
    ) -> None:
        if not nodes:
            raise ValueError("an enforcer needs at least one node to enforce for")
        self.cluster = cluster
        self.subnets = [node.layout.pod_subnet for node in nodes]
        self.bridges = [node.layout.bridge for node in nodes]
        self.resident_node = resident_node
        self.workdir = Path(workdir).resolve()
        self.bin_dir = Path(bin_dir).resolve() if bin_dir is not None else ensure_node_binaries()
        self.ledger = ledger if ledger is not None else host.HostLedger()
        self.log = self.workdir / "kube-network-policies.log"
        self.started_at = 0.0  # time.monotonic() when the process was started
        self.ready_at = 0.0  # time.monotonic() when it listened on its queue and the rules were in
        self._holder_id = f"{os.getpid()}:netpol:{self.workdir}"
        self._lock: socket.socket | None = None
        self._popen: subprocess.Popen[bytes] | None = None
        self._handle: IO[bytes] | None = None
        self._undo: list[str] = []  # what start() changed, in order

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def pid(self) -> int:
        return self._popen.pid if self._popen is not None else -1

    def start(self, timeout: float = 60) -> None:
        if self._undo:
            raise NetworkPolicyError("the enforcer is already running")
        deadline = time.monotonic() + timeout
        try:
            self._claim_host()
            self._bridge_netfilter()
            secrets = self._credentials()
            self._spawn(secrets)
            self._wait(lambda: queue_bound(QUEUE), deadline)
            self._install_rules()
            self.ready_at = time.monotonic()
        except BaseException as exc:
            try:
                self.stop()
            except NetworkPolicyError as undo:
                raise NetworkPolicyError(f"start failed ({exc}); undoing it failed too: {undo}") from exc
            raise

    def _claim_host(self) -> None:
        lock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            lock.bind(HOST_LOCK)
        except OSError:
            lock.close()
            raise NetworkPolicyError(
                "another NetworkPolicy enforcer runs in this network namespace (the abstract socket "
                f"@{HOST_LOCK[1:].decode()} is bound): its nfqueue {QUEUE} and tables are per namespace"
            ) from None
        self._lock = lock
        self._undo.append("lock")
        if nft_table():
            raise NetworkPolicyError(f"nftables table inet {TABLE} exists already: not ours, left alone")
        if CHAIN in mangle_rules() or V6_CHAIN in mangle_rules("ip6"):
            raise NetworkPolicyError(f"chain {CHAIN} or {V6_CHAIN} exists already: not ours, left alone")
        if queue_bound(QUEUE):
            raise NetworkPolicyError(f"nfqueue {QUEUE} is in use by another process")

    def _bridge_netfilter(self) -> None:
        keys = (BRIDGE_NF_SYSCTL, BRIDGE_NF6_SYSCTL)
        missing = [key for key in keys if not (Path("/proc/sys") / key).exists()]
        if missing:
            raise NetworkPolicyError(
                f"/proc/sys/{missing[0]} is missing: the br_netfilter module is not loaded "
                "(modprobe br_netfilter); without it traffic between pods on one bridge is not policed"
            )
        self._undo.append("ledger")  # before: a join that fails half-way is left all the same
        self.ledger.join(self._holder_id, sysctls=dict.fromkeys(keys, "1"), directories=[])
        for key in keys:
            if self.ledger.read_sysctl(key) != "1":
                (Path("/proc/sys") / key).write_text("1")

    def _credentials(self) -> Path:
        """The ServiceAccount, its RBAC, and a directory holding its token and the cluster CA."""
        namespace, name = SERVICE_ACCOUNT
        if self.cluster.kubectl("get", "serviceaccount", name, "-n", namespace, check=False).returncode:
            self.cluster.kubectl("create", "serviceaccount", name, "-n", namespace)
        for obj in (cluster_role(), cluster_role_binding()):
            self.cluster.kubectl("apply", "-f", "-", input=json.dumps(obj))
        token = self.cluster.kubectl(
            "create", "token", name, "-n", namespace, f"--duration={TOKEN_SECONDS}s"
        ).stdout.strip()
        secrets = self.workdir / "serviceaccount"
        secrets.mkdir(mode=0o700, parents=True, exist_ok=True)
        (secrets / "token").write_text(token)
        (secrets / "ca.crt").write_bytes(self.cluster.ca_file.read_bytes())
        (secrets / "namespace").write_text(namespace)
        return secrets

    def _spawn(self, secrets: Path) -> None:
        args = enforcer_args(self.bin_dir / "kube-network-policies", metrics_port=free_port())
        argv = [
            "unshare", "--mount", "--propagation", "private", "--",
            "sh", "-c", _LAUNCH, "aicert-netpol", SECRETS_DIR, str(secrets), *args,
        ]  # fmt: skip
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "KUBERNETES_SERVICE_HOST": self.cluster.api_address,  # 127.0.0.1 unless pod_network
            "KUBERNETES_SERVICE_PORT": str(self.cluster.apiserver_port),
        }
        self._handle = open(self.log, "ab")  # noqa: SIM115 - closed in stop()
        self._handle.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(args)}\n".encode())
        self._handle.flush()
        self._undo += ["table", "process"]  # its table is undone after the process is gone
        self.started_at = time.monotonic()
        self._popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._handle,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )

    def _wait(self, ready: Callable[[], bool], deadline: float) -> None:
        while True:
            if self._popen is not None and self._popen.poll() is not None:
                raise NetworkPolicyError(
                    f"kube-network-policies exited with code {self._popen.returncode}; tail of {self.log}:\n"
                    f"{_tail(self.log)}"
                )
            if ready():
                return
            if time.monotonic() >= deadline:
                raise NetworkPolicyError(
                    f"kube-network-policies did not bind nfqueue {QUEUE} in time; tail of {self.log}:\n"
                    f"{_tail(self.log)}"
                )
            time.sleep(POLL_SECONDS)

    def _iptables(self, args: list[str], family: str = "ip") -> subprocess.CompletedProcess[str]:
        return _run(_TOOLS[family], "-w", "-t", MANGLE, *args)

    def _install_rules(self) -> None:
        for family, rules in (
            ("ip", queue_rules(self.subnets, resident_node=self.resident_node)),
            ("ip6", ipv6_rules(self.bridges)),
        ):
            if not nft_table(family, MANGLE):
                self._undo.append(f"{family}-mangle-table")  # before: undone after the rules
            self._undo.append(f"{family}-rules")
            for rule in rules:
                done = self._iptables(rule, family)
                if done.returncode != 0:
                    raise NetworkPolicyError(
                        f"{_TOOLS[family]} -t {MANGLE} {' '.join(rule)}: {done.stderr.strip()}"
                    )

    def _remove_rules(self, family: str, rules: list[list[str]], chain: str, undo: list[str]) -> list[str]:
        problems: list[str] = []
        if f"{family}-rules" in undo:
            for rule in rules:
                done = self._iptables(rule, family)
                absent = any(m in done.stderr for m in ("No chain", "does not exist", "Bad rule"))
                if done.returncode != 0 and not absent:
                    problems.append(f"{_TOOLS[family]} -t {MANGLE} {' '.join(rule)}: {done.stderr.strip()}")
            if chain in mangle_rules(family):
                problems.append(f"{_TOOLS[family]} chain {chain} is still in table {MANGLE}")
        table_made = f"{family}-mangle-table" in undo
        if table_made and nft_table(family, MANGLE) and only_policies(mangle_rules(family)):
            done = _run("nft", "delete", "table", family, MANGLE)
            if done.returncode != 0:
                problems.append(f"nftables table {family} {MANGLE}: {done.stderr.strip()}")
        return problems

    def stop(self) -> None:
        """Remove the queueing rules (with nobody listening they would drop the pods' traffic), then
        SIGINT the enforcer (it deletes its table if it made one, then sleeps a 5 s grace before it
        exits: SIGKILL once the table is gone, or after STOP_GRACE_SECONDS); delete what is left;
        leave the host ledger; release the lock. Idempotent."""
        undo, self._undo = self._undo, []
        problems: list[str] = []
        problems += self._remove_rules("ip", undo_rules(resident_node=self.resident_node), CHAIN, undo)
        problems += self._remove_rules("ip6", undo_ipv6_rules(self.bridges), V6_CHAIN, undo)
        if "process" in undo and self._popen is not None:
            popen, self._popen = self._popen, None
            if popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    popen.send_signal(signal.SIGINT)  # its command handles SIGINT, not SIGTERM
                # Its cleanup is deleting its table; then it only sleeps out its grace period.
                deadline = time.monotonic() + STOP_GRACE_SECONDS
                while popen.poll() is None and nft_table() and time.monotonic() < deadline:
                    time.sleep(POLL_SECONDS)
                if popen.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(popen.pid, signal.SIGKILL)
                popen.wait()
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        if "table" in undo and nft_table():
            done = _run("nft", "delete", "table", "inet", TABLE)
            if done.returncode != 0:
                problems.append(f"nftables table inet {TABLE}: {done.stderr.strip()}")
        if "ledger" in undo:
            problems += self.ledger.leave(self._holder_id)
        if "lock" in undo and self._lock is not None:
            self._lock.close()
            self._lock = None
        if problems:
            raise NetworkPolicyError("could not undo: " + "; ".join(problems))
